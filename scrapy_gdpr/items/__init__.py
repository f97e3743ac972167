"""Items: where each item came from (:mod:`.provenance`) and the gate every item passes."""
