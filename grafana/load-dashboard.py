#!/usr/bin/env python3
"""Load the Baton dashboard into a Grafana you already run, through Grafana's HTTP API.

    GRAFANA_URL=http://localhost:3000 GRAFANA_TOKEN=glsa_... python3 grafana/load-dashboard.py
    GRAFANA_URL=http://localhost:3000 GRAFANA_USER=admin GRAFANA_PASSWORD=... \\
        python3 grafana/load-dashboard.py --datasource Prometheus --folder-uid ops

It sends grafana/dashboards/baton.json as POST /api/dashboards/db {"dashboard": ..., "overwrite":
true}: the dashboard keeps its uid ("baton"), so running it again after an update replaces it in
place. The token is a service account token with the Editor role (dashboards:write).
--datasource names the Prometheus data source the dashboard opens with (its "Data source"
variable; without it, Grafana's default Prometheus). Standard library only. Exit status 0 when
Grafana took the dashboard, 1 otherwise, with Grafana's answer.
"""
import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def request_body(dashboard, datasource, folder_uid):
    """What Grafana's POST /api/dashboards/db takes: the dashboard (without a numeric id, so
    the uid decides what is replaced), overwrite, and where to put it."""
    dashboard = dict(dashboard, id=None)
    if datasource:
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "datasource":
                variable["current"] = {"selected": True, "text": datasource, "value": datasource}
    body = {"dashboard": dashboard, "overwrite": True, "message": "Baton dashboard (grafana/load-dashboard.py)"}
    if folder_uid:
        body["folderUid"] = folder_uid
    return body


def authorization():
    token = os.environ.get("GRAFANA_TOKEN")
    if token:
        return "Bearer " + token
    user, password = os.environ.get("GRAFANA_USER"), os.environ.get("GRAFANA_PASSWORD")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    sys.exit("set GRAFANA_TOKEN (a service account token), or GRAFANA_USER and GRAFANA_PASSWORD")


def main():
    parser = argparse.ArgumentParser(description="Load the Baton dashboard into Grafana.")
    parser.add_argument("--dashboard", default=os.path.join(HERE, "dashboards", "baton.json"))
    parser.add_argument("--datasource", help="name or uid of the Prometheus data source that scrapes Baton")
    parser.add_argument("--folder-uid", help="uid of the Grafana folder to put it in (default: General)")
    args = parser.parse_args()
    grafana = os.environ.get("GRAFANA_URL", "http://localhost:3000").rstrip("/")
    with open(args.dashboard, encoding="utf-8") as f:
        body = request_body(json.load(f), args.datasource, args.folder_uid)
    request = urllib.request.Request(
        grafana + "/api/dashboards/db",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json", "Authorization": authorization()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        sys.exit(f"Grafana refused the dashboard: HTTP {e.code}: {e.read().decode(errors='replace')}")
    except urllib.error.URLError as e:
        sys.exit(f"cannot reach Grafana at {grafana}: {e.reason}")
    print(f"dashboard loaded: {grafana}{answer.get('url', '/d/baton')} (version {answer.get('version')})")


if __name__ == "__main__":
    main()
