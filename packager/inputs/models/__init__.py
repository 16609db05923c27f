"""Small network builders for conversion recipes whose upstream code is not installable here."""
