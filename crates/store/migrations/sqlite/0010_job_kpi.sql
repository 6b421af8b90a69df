-- What a finished training job took and cost (issue 29's KPIs), a JSON
-- object written when it ends; NULL before.
ALTER TABLE jobs ADD COLUMN kpi TEXT;
