"""Word lists for the synthetic bios world. Surnames are colours and materials, as in LUME
Task 2 ("Fredericka Amber", "Margarita Bronze")."""

FEMALE_FIRST_NAMES = (
    "Ada", "Alma", "Beatrix", "Carla", "Daria", "Edith", "Elena", "Flora", "Greta", "Hazel",
    "Ilse", "Irene", "Jolene", "Karin", "Leona", "Lydia", "Mabel", "Marta", "Nadia", "Nora",
    "Olive", "Paula", "Rhea", "Rosa", "Selma", "Tessa", "Uma", "Vera", "Wanda", "Yara",
)
MALE_FIRST_NAMES = (
    "Abel", "Arno", "Boris", "Cyril", "Dexter", "Elmer", "Felix", "Gideon", "Hector", "Ivan",
    "Jasper", "Kurt", "Lionel", "Milo", "Nestor", "Oscar", "Pablo", "Quentin", "Rufus", "Silas",
    "Tobias", "Ulrich", "Victor", "Walter", "Xavier", "Yusuf", "Zeno", "Otto", "Hugo", "Lars",
)
SURNAMES = (
    "Amber", "Bronze", "Cobalt", "Copper", "Coral", "Crimson", "Ebony", "Emerald", "Garnet",
    "Indigo", "Ivory", "Jade", "Lilac", "Magenta", "Maroon", "Ochre", "Olive", "Onyx", "Pearl",
    "Pewter", "Russet", "Saffron", "Scarlet", "Sepia", "Silver", "Slate", "Tawny", "Teal",
    "Umber", "Violet",
)
# (city, state, phone area code, first two digits of the zip code)
CITIES = (
    ("Louisville", "KY", "502", "40"),
    ("Denver", "CO", "303", "80"),
    ("Boston", "MA", "617", "02"),
    ("Portland", "OR", "503", "97"),
    ("Tucson", "AZ", "520", "85"),
    ("Omaha", "NE", "402", "68"),
    ("Memphis", "TN", "901", "38"),
    ("Seattle", "WA", "206", "98"),
    ("Atlanta", "GA", "404", "30"),
    ("Chicago", "IL", "312", "60"),
    ("Houston", "TX", "713", "77"),
    ("Miami", "FL", "305", "33"),
)
STREETS = (
    "Maple", "Oak", "Cedar", "Pine", "Elm", "Birch", "Willow", "Walnut", "Chestnut", "Spruce",
    "Hickory", "Poplar", "Laurel", "Magnolia", "Juniper", "Aspen",
)
STREET_SUFFIXES = ("Street", "Avenue", "Lane", "Road", "Drive", "Court")
EMAIL_DOMAINS = ("me.com", "mail.com", "inbox.org", "post.net")
# Sixteen pattern x domain choices, so an unseen person's address is rarely guessed from the name.
EMAIL_PATTERNS = ("{first}_{last}", "{first}.{last}", "{first}{last}", "{initial}{last}")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
