"""Config-driven pipeline: MSCProcessor with baseline, optimize and finalize stages."""

from mscgym.pipeline.config import ConfigError, validate_config
from mscgym.pipeline.processor import MSCProcessor, create_msc_processor

__all__ = ["ConfigError", "MSCProcessor", "create_msc_processor", "validate_config"]
