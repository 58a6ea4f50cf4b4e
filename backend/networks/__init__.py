"""Network definitions of the custom two-stage extreme-point model."""
