"""User-facing errors: one clear line, no stack trace (the entry points print them and exit 2)."""


class VaeLabError(Exception):
    """A problem with the user's input (config, data, checkpoint, Hub id) that they can fix."""


class ConfigError(VaeLabError):
    """A config value is of the wrong type, out of range, or not one of the valid choices."""


class DataError(VaeLabError):
    """A dataset is missing, corrupted, empty, or of a shape the model cannot take."""


class CheckpointError(VaeLabError):
    """A checkpoint or artifact cannot be read, or does not match the model."""


def choices_error(key: str, value, choices) -> ConfigError:
    """The standard message for a value that is not one of the registry's names."""
    return ConfigError(f"{key}={value!r} is not a valid choice; valid choices: {', '.join(sorted(choices))}")
