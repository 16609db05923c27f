"""Conversion recipes that build on packager.inputs.convert (quantisation) and network builders whose upstream code is not installable here."""
