"""The agent: observe -> decide -> execute, with lease renewal on its own thread."""
