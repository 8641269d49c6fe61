"""moorage: a Kubernetes operator that serves and fine-tunes open-source LLMs."""
