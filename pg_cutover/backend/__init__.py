"""The application in front of the database: its service commands and its health check."""
