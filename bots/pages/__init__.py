"""Page objects, one per legacy web app."""
