"""End-to-end LoCoMo evaluation: the harness, the LLM judge and the reports."""
