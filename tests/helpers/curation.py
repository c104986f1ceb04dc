"""Text and resources shared by the curation tests: four unrelated prose paragraphs that pass every
cleaned_chunks rule, the resources the curation assets need, and ``doc_line`` (one landing-zone JSON line)."""

import json

from resources import ArtifactStoreResource, CatalogResource, LandingZone

PROSE = (
    "The river town grew slowly during the nineteenth century, when a railway line reached its southern edge. "
    "Merchants built warehouses along the water, and families moved into narrow brick houses near the station. "
    "By the time the first bridge opened, the market had doubled in size and the council began to plan a school. "
    "Travellers described the place as busy but friendly, with a harbour that was crowded with small boats. "
    "Local histories record that the mill closed in 1921, although the building still stands beside the old canal. "
    "Today visitors walk along the towpath, read the plaques on the walls, and stop for lunch in the square."
)
OTHER_PROSE = (
    "A glacier forms where snow accumulates faster than it melts, compressing over many years into dense ice. "
    "As the ice thickens it begins to flow under its own weight, carving valleys and carrying rocks for miles. "
    "Scientists measure this motion with stakes, satellites and careful surveys of the surface each summer. "
    "Many glaciers have retreated during the last century, exposing bare rock and new lakes at their fronts. "
    "The meltwater feeds rivers that supply farms and cities, so changes in the ice matter far downstream."
)
THIRD_PROSE = (
    "The orchestra rehearsed every evening in the old hall, where the wooden floor creaked under the chairs. "
    "Its conductor insisted on long pauses between movements, so the players could hear the silence settle. "
    "On the night of the concert the audience arrived early, and many stood along the walls to listen. "
    "Critics later wrote that the slow movement was the finest they had heard in that city for years."
)
FOURTH_PROSE = (
    "Bees communicate the location of flowers through a dance performed on the vertical comb inside the hive. "
    "The angle of the dance relative to gravity points toward the food, measured from the direction of the sun. "
    "Its duration tells the other workers how far they must fly, and the vigour signals how rich the source is. "
    "Researchers decoded this language in the twentieth century with patient observation and glass hives."
)
RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


def doc_line(i, text):
    return json.dumps({"title": f"doc {i}", "content": text, "url": f"https://example.org/{i}"})
