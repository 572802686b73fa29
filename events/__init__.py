"""Sample Lambda events (``*.json``) and their builders (:mod:`events.builders`)."""
