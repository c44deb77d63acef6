"""Producers: the simulated LLM (``llm_sim``) and a producer that streams it into the hub (``simulated``)."""
