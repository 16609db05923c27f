"""The scoreboard: verified results on a board (SQLite or PostgreSQL), their Pareto
frontier, evidence-based badges, and a web site with plots, JSON and CSV.

``publish`` accepts a bundle only after ``packager.bundle.verify_bundle`` passed;
``store`` is the data layer; ``pareto`` and ``badges`` are pure; ``web`` serves it.
"""
