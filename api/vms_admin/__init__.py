"""The admin REST API and health probes (FastAPI), served by the operator on its own port. Built in issue 6."""
