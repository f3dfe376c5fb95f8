"""``python -m dataset_builder.publish``: refresh the committed Space README and repos.json."""

from dataset_builder.publish.cli import write_space_readme

write_space_readme()
