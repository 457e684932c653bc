"""Building blocks of the neural estimators (private: no stable public API).

``_engine`` trains a model under an objective; ``_objectives`` holds the
objectives; ``_modules`` the networks and densities; ``_base`` what every
neural estimator shares (parameters, pickling, batched inference).
"""
