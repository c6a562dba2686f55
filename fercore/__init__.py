"""fercore: the engine of FER Lab (data, models, training, the run store, jobs, explanations)."""
__version__ = "0.1.0"
