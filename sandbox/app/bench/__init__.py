"""The long-context benchmark suite behind ``rlm bench`` (:mod:`.suite`): its task generators, RULER's
tasks, and how its results are summarized and written."""
