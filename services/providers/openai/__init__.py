"""The OpenAI adapter: OpenAI Chat Completions and any OpenAI-compatible server (vLLM, Ollama, llama.cpp)."""
