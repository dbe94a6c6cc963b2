"""The run itself as data: the step table, the manifest, the plan, the report, inventories and the fleet."""
