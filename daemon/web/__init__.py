"""The node's one HTTP server: a Flask application assembled from blueprints (the route
registry), served by cheroot in a background thread."""
