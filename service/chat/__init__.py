"""POST /v1/chat/completions: OpenAI-compatible, personalized by the user's history and reward."""
