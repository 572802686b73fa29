"""The service's routers: meta (page, docs, health, info), search, embeddings, items."""
