"""datagen: turn a little human input into curated instruction-tuning data and a fine-tuned model."""

__version__ = "0.1.0"
