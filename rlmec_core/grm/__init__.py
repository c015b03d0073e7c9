"""The generative reward model (RLMEC.md stages 3-5): its training data, prompts, scoring and rewrites."""
