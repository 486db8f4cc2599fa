"""Export for other runtimes: GGUF files (gguf-py and llama.cpp's quantizer) and the Ollama Modelfile."""
