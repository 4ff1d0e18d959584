"""The ops console: a small server-rendered web app on the queue's database.

`app` is the factory (settings, security, blueprints); `auth` logs people in and checks
roles; `views` the pages (escalation inbox, case, queue, runs, dashboard, forecast);
`inbox` the queries behind them; `metrics`, `charts` (server-side SVG) and `forecast`
the dashboard's numbers, drawings and predictions; `server` runs it under waitress.

Nothing is imported here, so that `bots.config` can read `bots.console.settings` alone.
"""
