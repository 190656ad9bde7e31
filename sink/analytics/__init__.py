"""Flow analytics: typed readers of the studio.* analytics functions (``queries``) and the
rollup's maintenance entry points (``rollup``). The SQL lives in
``sql/migrations/0008_analytics.sql``; ``docs/analytics.md`` is the contract."""
