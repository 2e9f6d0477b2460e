"""Evaluation: metrics, Trainer scoring, the decision threshold, and the Detector every app loads.

Answer-token scores -> sklearn metrics (metrics.py), scoring with a Trainer (scoring.py), the threshold
chosen on validation (threshold.py), and ``Detector.from_pretrained`` / ``save_pretrained`` (detector.py).
"""
