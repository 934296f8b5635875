"""The Evaluate tab: a prompt set run through one or two set-ups, rated and exported (``tab.build``)."""
