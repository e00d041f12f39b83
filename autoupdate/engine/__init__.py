"""The pure core: node state machine, planner, rollout lifecycle, and the engine tying them."""
