"""The Telegram transport: client, update parsing, dispatch, sending, runner."""
