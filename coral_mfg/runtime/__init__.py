"""A run: built, scheduled, watched and stopped; its status, the one model every view
reads. Imports the layers below it."""
