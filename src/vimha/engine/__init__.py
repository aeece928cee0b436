"""The loops: observe -> decide -> act."""
