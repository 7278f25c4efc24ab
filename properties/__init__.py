"""The plugin's yaml defaults (installed as ``recbole_hyper.properties``; see ``recbole_hyper.config``)."""
