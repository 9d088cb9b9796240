"""Tables of a quantized model for people reading it: every quantizer's bits, and every
layer's choice (low-bit, 8-bit, fused, pass-through) and why."""
from kquant.quantizers.model_states import quantize_wrappers, quantizer_states


def describe(model, print_fn=print):
    """Prints every layer's choice and why, then one row per quantizer (layer, role,
    quantizer, bits, levels, on/off), and returns the quantizer rows.

    Args:
        model: a kquant model.
        print_fn: where the lines go (None prints nothing).

    Returns:
        A list of dicts with keys layer, role, quantizer, bits (current), deploy_bits, levels
        (values one channel may hold now) and enabled.
    """
    rows = [{"layer": s.layer, "role": s.role, "quantizer": type(s.quantizer).__name__,
             "bits": int(s.bits.numpy()), "deploy_bits": s.quantizer.deploy_bits,
             "levels": s.quantizer.level_count(s.variables),
             "enabled": bool(s.enabled.numpy() > 0.5)}
            for s in quantizer_states(model)]
    if print_fn is not None:
        describe_layers(model, print_fn)
        print_fn("")
        print_fn(f"{'layer':<28} {'role':<11} {'quantizer':<32} bits  levels  on")
        for row in rows:
            print_fn(f"{row['layer']:<28} {row['role']:<11} {row['quantizer']:<32} "
                     f"{row['bits']:>4}  {row['levels']:>6}  {'yes' if row['enabled'] else 'no'}")
    return rows


def _quantizer_text(quantizer, bits):
    if quantizer is None:
        return "-"
    if bits is not None:
        return f"{type(quantizer).__name__} {bits}-bit"
    return "8-bit fixed range" if hasattr(quantizer, "requantization_range") else \
        "8-bit learned range"


def describe_layers(model, print_fn=print):
    """One row per quantized layer: its weights, its output and the rule that chose them.

    Args:
        model: a kquant model.
        print_fn: where the lines go (None prints nothing).

    Returns:
        A list of dicts with keys layer, type, weights, output ("-" for none) and why.
    """
    bits = {(s.layer, s.role): s.quantizer.deploy_bits for s in quantizer_states(model)}
    rows = []
    for wrapper in quantize_wrappers(model):
        config, name = wrapper.quantize_config, wrapper.layer.name
        weight_quantizer = getattr(config, "weight_quantizer", None)
        rows.append({"layer": name, "type": type(wrapper.layer).__name__,
                     "weights": _quantizer_text(weight_quantizer, bits.get((name, "weight"), 8)),
                     "output": _quantizer_text(config.output_quantizer,
                                               bits.get((name, "activation"))),
                     "why": getattr(config, "why", "")})
    if print_fn is not None:
        print_fn(f"{'layer':<28} {'type':<22} {'weights':<26} {'output':<26} why")
        for row in rows:
            print_fn(f"{row['layer']:<28} {row['type']:<22} {row['weights']:<26} "
                     f"{row['output']:<26} {row['why']}")
    return rows
