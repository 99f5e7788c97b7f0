"""Command-line fronts: ``medspike-train``, ``medspike-finetune``, ``medspike-evaluate``."""
