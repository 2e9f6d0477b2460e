"""Applications over a trained detector: predict, demo, evaluate, merge (thin verbs over eval.Detector)."""
