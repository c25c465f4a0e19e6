package org.referraladapter.validator;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;

import java.io.IOException;

/** Reads the top-level "resourceType" of a JSON text without parsing the whole resource. */
final class ResourceTypeSniffer {

	private static final JsonFactory ourFactory = new JsonFactory();

	private ResourceTypeSniffer() {}

	/** The resourceType, or null when the text is not a JSON object with a string resourceType. */
	static String resourceType(String theJson) {
		try (JsonParser parser = ourFactory.createParser(theJson)) {
			if (parser.nextToken() != JsonToken.START_OBJECT) {
				return null;
			}
			while (parser.nextToken() == JsonToken.FIELD_NAME) {
				String name = parser.currentName();
				JsonToken value = parser.nextToken();
				if ("resourceType".equals(name)) {
					return value == JsonToken.VALUE_STRING ? parser.getText() : null;
				}
				parser.skipChildren();
			}
			return null;
		} catch (IOException e) {
			return null;
		}
	}
}
