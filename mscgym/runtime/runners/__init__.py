"""One runner per framework; ``mscgym.runtime.registry`` imports them on first use."""
