"""A table of every layer's weight and activation bits, for people reading a quantized model."""
from kquant.precision import quantizer_states


def describe(model, print_fn=print):
    """Prints and returns one row per quantized layer: name, role, quantizer, bits, on/off.

    Args:
        model: a kquant model.
        print_fn: where the lines go (None prints nothing).

    Returns:
        A list of dicts with keys layer, role, quantizer, bits, enabled.
    """
    rows = [{"layer": s.layer, "role": s.role, "quantizer": type(s.quantizer).__name__,
             "bits": int(s.bits.numpy()), "enabled": bool(s.enabled.numpy() > 0.5)}
            for s in quantizer_states(model)]
    if print_fn is not None:
        print_fn(f"{'layer':<28} {'role':<11} {'quantizer':<28} bits  on")
        for row in rows:
            print_fn(f"{row['layer']:<28} {row['role']:<11} {row['quantizer']:<28} "
                     f"{row['bits']:>4}  {'yes' if row['enabled'] else 'no'}")
    return rows
