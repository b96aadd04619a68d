"""The sync console in the Airflow UI: a "Salesforce Sync" entry in Airflow's navigation showing
the console's pages (``sfsync_console.app``, a FastAPI app under ``/sfsync/``, behind Airflow's
own login and permissions)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from sfsync_console.app import PREFIX, app


class SfsyncConsolePlugin(AirflowPlugin):
    name = "sfsync_console"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Salesforce Sync"}]
    external_views = [{
        "name": "Salesforce Sync",
        "href": PREFIX + "/",  # the trailing slash matters: without it the UI's catch-all answers
        "destination": "nav",
        "nav_top_level": True,
        "url_route": "sfsync",
    }]
