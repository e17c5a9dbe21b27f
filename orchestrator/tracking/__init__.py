"""All of orch's MLflow code: the store, the run vocabulary, the one writer, the search callback,
resuming a search's runs and what a finished search leaves on its parent run."""
