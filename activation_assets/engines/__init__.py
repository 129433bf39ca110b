"""The warehouses the models run in: one interface (`base.Warehouse`), one module per engine."""
