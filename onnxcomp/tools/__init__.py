"""The jobs around compression that the CLI offers: export, evaluate, inspect, and the demo."""
