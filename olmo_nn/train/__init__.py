"""Training: OLMo's recipe on FSDP2, exact resume, reconstructible batches."""
