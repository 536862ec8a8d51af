"""The LLM agents: fact extractor, Memory Manager, Answer Agent, and the pipeline that runs them.

Each prompt lives in the same module as its parser.
"""
