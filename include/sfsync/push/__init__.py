"""The push (marketing database -> Salesforce): people, campaigns and members, activities."""
