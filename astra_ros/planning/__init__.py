"""Model-predictive planning through the world model's imagination (no ROS imports).

:mod:`astra_ros.planning.cem`: the cross-entropy-method planner used in-process by
``bench/plan_eval.py`` and through ``~/imagine`` by the ``astra_planner`` node.
"""

from astra_ros.planning.cem import (
    ActionEncoder,
    CEMConfig,
    CEMPlanner,
    GoalScorer,
    PlanResult,
    PlanSchedule,
    downsample,
    model_imagine,
    shuffle_candidates,
    zero_actions,
)

__all__ = ["ActionEncoder", "CEMConfig", "CEMPlanner", "GoalScorer", "PlanResult", "PlanSchedule", "downsample", "model_imagine",
           "shuffle_candidates", "zero_actions"]
