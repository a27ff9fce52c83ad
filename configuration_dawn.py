from modeling_dawn.configuration_dawn import DawnConfig  # noqa: F401  (re-export; the real class lives in modeling_dawn/)
