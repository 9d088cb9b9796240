"""A table of every layer's weight and activation bits, for people reading a quantized model."""
from kquant.quantizers.model_states import quantizer_states


def describe(model, print_fn=print):
    """Prints and returns one row per quantizer: layer, role, quantizer, bits, levels, on/off.

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
        print_fn(f"{'layer':<28} {'role':<11} {'quantizer':<32} bits  levels  on")
        for row in rows:
            print_fn(f"{row['layer']:<28} {row['role']:<11} {row['quantizer']:<32} "
                     f"{row['bits']:>4}  {row['levels']:>6}  {'yes' if row['enabled'] else 'no'}")
    return rows
