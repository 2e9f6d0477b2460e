"""Memory: what a run measures (peak.py) and the planner (`llava-df plan`: dry run, closed form, --budget).

Nothing is imported here, so that ``plan_flags`` (the planner's flags, read before torch loads) stays light.
"""
