"""The workflow engine. It knows no transport: events in, actions out."""
